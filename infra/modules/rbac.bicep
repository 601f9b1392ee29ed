// Role assignments. The managed identity gets only what the Functions host and
// the handler need on their own storage account, plus permission to publish
// telemetry:
//
//   Storage Blob Data Owner        host: timer and singleton locks, the deployment
//                                  package; handler: mapping, state, run records,
//                                  the sync.lock lease (Owner, not Contributor, is
//                                  what the Functions docs require for the host's
//                                  AzureWebJobsStorage connection)
//   Storage Queue Data Contributor host: the ImportStatus and SyncRun queue
//                                  triggers; handler: delayed status-poll
//                                  messages and the run requests of the API
//   Monitoring Metrics Publisher   host: telemetry to Application Insights with
//                                  Entra ID authentication
//
// Storage Table Data Contributor is deliberately absent: no function uses
// tables, and without a table endpoint the host only skips writing its
// diagnostic events (a warning at start-up).
//
// Optionally, the operator who runs `azd up` (AZURE_PRINCIPAL_ID) gets Storage
// Blob Data Contributor on the state container alone, to upload mapping.json
// and read run records with `az storage blob ... --auth-mode login`.

@description('Name of the storage account.')
param storageAccountName string

@description('Name of the state container (SYNC_CONTAINER).')
param stateContainerName string

@description('Name of the Application Insights resource.')
param applicationInsightsName string

@description('Principal (object) id of the managed identity.')
param identityPrincipalId string

@description('Object id of the operator to give blob access to the state container; empty for none.')
param operatorPrincipalId string = ''

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource stateContainer 'containers' existing = {
      name: stateContainerName
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identityPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorBlobs 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage::blobService::stateContainer.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: storage::blobService::stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: operatorPrincipalId
  }
}
