// The Flex Consumption plan and the Linux Function App running profilesync's
// custom handler (the `handler` binary named in host.json). The app runs as
// the user-assigned identity; every connection is identity-based.
//
// The `appsettings` resource below lists every app setting, and only those:
// handler/drift_test.go compares it with the settings the handler reads.
// Settings the platform sets (IDENTITY_ENDPOINT, IDENTITY_HEADER,
// FUNCTIONS_CUSTOMHANDLER_PORT) are not repeated here, and Flex Consumption
// refuses FUNCTIONS_WORKER_RUNTIME: the runtime is functionAppConfig.runtime.

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region.')
param location string

@description('Tags for both resources.')
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Blob service endpoint of the storage account, ending with a slash.')
param storageBlobEndpoint string

@description('Queue service endpoint of the storage account, ending with a slash.')
param storageQueueEndpoint string

@description('Blob container receiving the deployment package.')
param deploymentContainerName string

@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Most on-demand instances of each function group (not of the app). main.bicep keeps it within what Flex Consumption accepts: 40-1000 everywhere, lower only where the preview allows it.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('SPO_SITE_URL: absolute URL of the site whose library receives the import files.')
param siteUrl string

@description('SPO_FOLDER: site-relative folder or library for the import files.')
param folder string

@description('SYNC_SCHEDULE: NCRONTAB schedule of the SyncTimer function (UTC).')
param schedule string

@description('GRAPH_PARALLELISM: ranges of users a full sync reads from Graph at once (1 = one sequential users/delta round).')
@minValue(1)
@maxValue(64)
param graphParallelism int = 16

@description('GRAPH_ENDPOINT: Microsoft Graph origin (change for national clouds).')
param graphEndpoint string = 'https://graph.microsoft.com'

@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
@description('LOG_LEVEL: least level of the handler log lines.')
param logLevel string = 'info'

@description('SYNC_CONTAINER: blob container holding the mapping and the state.')
param stateContainerName string

@description('SYNC_STATUS_QUEUE: queue of job status polls.')
param statusQueueName string

@description('SYNC_RUN_QUEUE: queue of manual runs requested over HTTP (the SyncRun function).')
param runQueueName string

@description('STATUS_POLL_BACKOFF: delays between job status polls.')
param statusPollBackoff string = '1m,2m,5m,10m,15m,30m'

@description('STATUS_POLL_MAX_AGE: stop polling a job after this long.')
param statusPollMaxAge string = '48h'

@description('CLEANUP_AFTER_DAYS: delete import files and job logs older than this many days; 0 keeps everything.')
param cleanupAfterDays string = '0'

@description('RECORDS_RETENTION_DAYS: delete run, job and poll records of finished work after this many days; 0 keeps them all.')
param recordsRetentionDays string = '90'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true // Linux
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd deploys the service "handler" of azure.yaml to the site with this tag.
  tags: union(tags, { 'azd-service-name': 'handler' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: {
      // Host storage, identity-based (read by the host and by the handler).
      AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
      AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId

      // Telemetry, signed in as the identity (read by the host).
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'

      // The handler: Graph and SharePoint tokens come from this identity.
      AZURE_CLIENT_ID: identityClientId
      GRAPH_ENDPOINT: graphEndpoint
      GRAPH_PARALLELISM: string(graphParallelism)
      LOG_LEVEL: logLevel
      SPO_SITE_URL: siteUrl
      SPO_FOLDER: folder
      SYNC_SCHEDULE: schedule
      SYNC_CONTAINER: stateContainerName
      SYNC_STATUS_QUEUE: statusQueueName
      SYNC_RUN_QUEUE: runQueueName
      STATUS_POLL_BACKOFF: statusPollBackoff
      STATUS_POLL_MAX_AGE: statusPollMaxAge
      CLEANUP_AFTER_DAYS: cleanupAfterDays
      RECORDS_RETENTION_DAYS: recordsRetentionDays
    }
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
