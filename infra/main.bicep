// profilesync on Azure: one resource group holding a Linux Function App on the
// Flex Consumption plan (the Go custom handler), its storage account (shared
// keys disabled), a user-assigned managed identity, Log Analytics and
// Application Insights. `azd up` deploys this file with main.parameters.json;
// infra/grant-permissions.sh then grants the identity its Graph and SharePoint
// app roles, which ARM cannot.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region of every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({ azd: { type: 'location' } })
param location string

@minLength(1)
@description('SPO_SITE_URL: absolute URL of the SharePoint site whose library receives the import files, e.g. https://contoso.sharepoint.com/sites/hr.')
param siteUrl string

@description('SPO_FOLDER: site-relative folder or library receiving the import files (created if missing).')
param folder string = 'Shared Documents'

@description('SYNC_SCHEDULE: NCRONTAB schedule of the sync, in UTC (default: 02:00 every day).')
param schedule string = '0 0 2 * * *'

@description('CLEANUP_AFTER_DAYS: delete import files and job logs from the library after this many days; 0 keeps them all.')
param cleanupAfterDays string = '0'

@description('RECORDS_RETENTION_DAYS: delete run, job and poll records of finished work after this many days; 0 keeps them all.')
param recordsRetentionDays string = '90'

@description('GRAPH_PARALLELISM: ranges of users a full sync reads from Graph at once (1 = one sequential users/delta round).')
@minValue(1)
@maxValue(64)
param graphParallelism int = 16

@description('GRAPH_ENDPOINT: Microsoft Graph origin; change only for national clouds.')
param graphEndpoint string = 'https://graph.microsoft.com'

@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
@description('LOG_LEVEL: least level of the handler log lines (debug adds one line per SharePoint request).')
param logLevel string = 'info'

@description('Object id of the operator running azd (AZURE_PRINCIPAL_ID), given blob access to the state container; empty for none.')
param principalId string = ''

@description('Name of the Azure Monitor workbook charting runs and import jobs (README, "Metrics").')
param workbookDisplayName string = 'profilesync'

// Flex Consumption scales per function group: all HTTP functions (here Api)
// together, every other function (SyncTimer, ImportStatus, SyncRun) on its own
// instances, and maximumInstanceCount caps the on-demand instances of EACH
// group, not of the app (Azure/azure-rest-api-specs#45083, "The maximum number
// of on demand instances per function group"). The values Flex accepts in every
// region are 40 to 1000, default 100 (the custom-handler stack data in
// Azure/azure-powershell src/Functions/Functions.Autorest/custom/
// FunctionsStackFlexData/*/custom.json: lowestMaximumInstanceCount 40,
// highestMaximumInstanceCount 1000, defaultValue 100; Microsoft's Flex sample,
// Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/main.bicep,
// declares @minValue(40) @maxValue(1000)). Values under 40 are a preview in a
// few regions only (Azure/azure-functions-host#10523): maximumInstanceCountPreview.
//
// What instances mean for profilesync: one sync runs at a time (the sync.lock
// lease), so SyncTimer (a singleton timer) and SyncRun (one message per manual
// run) never use more than one instance each, and ImportStatus polls a
// handful of jobs. Only the HTTP group (Api: run records, job status,
// health, mapping) could grow, and only under a flood of calls. 40, the
// lowest value accepted everywhere, is ample; the cap bounds what a runaway
// polling script can cost, nothing else.
@description('Most on-demand instances of each function group (Flex Consumption scales the HTTP functions as one group and every other function on its own instances). 40 to 1000, the range Flex accepts in every region; 40 is ample, since one sync runs at a time and only the HTTP group (API calls, status polls) could use more than one instance.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Preview: a maximum below 40 (1 to 39) for regions where Flex Consumption accepts one (azure-functions-host#10523); it then replaces maximumInstanceCount. 0 (the default) leaves it unused. Elsewhere the deployment is refused.')
@minValue(0)
@maxValue(39)
param maximumInstanceCountPreview int = 0

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var stateContainerName = 'profilesync'
var statusQueueName = 'profilesync-status'
var runQueueName = 'profilesync-runs'
var deploymentContainerName = 'app-package'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity './modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-profilesync-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stps${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    stateContainerName: stateContainerName
    statusQueueName: statusQueueName
    runQueueName: runQueueName
  }
}

module monitoring './modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

// Charts of the runs and import jobs over time, from the handler's metric
// events in Application Insights (README, "Metrics").
module workbook './modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    displayName: workbookDisplayName
  }
}

module rbac './modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    stateContainerName: stateContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
  }
}

module functionApp './modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-profilesync-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCountPreview > 0 ? maximumInstanceCountPreview : maximumInstanceCount
    siteUrl: siteUrl
    folder: folder
    schedule: schedule
    graphEndpoint: graphEndpoint
    graphParallelism: graphParallelism
    logLevel: logLevel
    cleanupAfterDays: cleanupAfterDays
    recordsRetentionDays: recordsRetentionDays
    stateContainerName: stateContainerName
    statusQueueName: statusQueueName
    runQueueName: runQueueName
  }
  // The host starts as soon as the app exists; give it its storage roles first.
  dependsOn: [
    rbac
  ]
}

// azd saves these in .azure/<environment>/.env (see `azd env get-values`).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output AZURE_WORKBOOK_ID string = workbook.outputs.workbookId
output PROFILESYNC_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output PROFILESYNC_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output PROFILESYNC_CONTAINER string = stateContainerName
