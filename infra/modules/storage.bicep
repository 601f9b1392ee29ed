// The storage account of the Function App: host state (timer locks, queue
// triggers), the deployment package container, and profilesync's own state
// container, status queue and run queue. Shared keys are disabled: every
// client signs in with Entra ID (the managed identity, or the operator with
// --auth-mode login).

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Azure region.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Blob container holding mapping.json, state.json and the run records (SYNC_CONTAINER).')
param stateContainerName string

@description('Queue of job status polls (SYNC_STATUS_QUEUE).')
param statusQueueName string

@description('Queue of manual runs requested over HTTP, taken by the SyncRun function (SYNC_RUN_QUEUE).')
param runQueueName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
    }

    // Created here rather than by the handler's first start, so the operator
    // can upload mapping.json before the first run.
    resource stateContainer 'containers' = {
      name: stateContainerName
    }
  }

  resource queueService 'queueServices' = {
    name: 'default'

    resource statusQueue 'queues' = {
      name: statusQueueName
    }

    resource runQueue 'queues' = {
      name: runQueueName
    }
  }
}

output id string = storage.id
output name string = storage.name
// Both end with '/'.
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
